"""Development support shared by the tests, the demo and the benchmarks (not shipped code).

``cluster`` starts real h2k-controlplane and h2k-agent processes on loopback, ``images``
builds small sample disk images, ``specs`` builds v1 job documents from the example files and
``pki`` makes a throw-away certificate authority for mutual TLS.
"""
