"""Disk-image tools: qemu-img wrappers, partition tables, atomic output files."""
