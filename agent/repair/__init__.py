"""Offline guest repair: detection, fixes, fsck, reports."""
