"""What wakes a run: the termination and housekeeping queue sensors."""
