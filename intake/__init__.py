"""h2k-intake: HyperSDK's daemon mode (a watched queue directory) on top of the control plane.

HyperSDK drops an Artifact Manifest into a queue directory and waits for
``<output dir>/<vm>.qcow2`` (success) or ``<output dir>/<vm>.error`` (failure, its content the
error text). The intake claims each drop, submits a migration to the control plane like
``h2kctl migrate`` does, follows it and answers HyperSDK through those two files.
"""
