"""HyperSDK intake: hyper2kvm direct mode (and the watch-directory daemon)."""
