"""HyperSDK's two ways in: the daemon mode (h2k-intake, a watched queue directory) and the
direct mode (``hyper2kvm MANIFEST``, :mod:`.direct`), on top of the control plane.

In daemon mode HyperSDK drops an Artifact Manifest into a queue directory and waits for
``<output dir>/<vm>.qcow2`` (success) or ``<output dir>/<vm>.error`` (failure, its content the
error text). The intake claims each drop, submits a migration to the control plane like
``h2kctl migrate`` does, follows it and answers HyperSDK through those two files.
"""
