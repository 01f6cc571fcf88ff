"""cirrus: provenance for every CloudVolume write."""
