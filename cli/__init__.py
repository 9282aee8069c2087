"""h2kctl, the operator CLI of h2k."""
