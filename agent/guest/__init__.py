"""What is installed in a guest, read from its mounted file systems (never written)."""
