"""Server and client plumbing shared by every h2k program: TLS, channels, identity,
interceptors, status mapping, tracing, health and metrics ports, logs and shared flags.

Not the contract (that is :mod:`protocol`): how the programs run it.
"""
