"""Whole-VM migrations, as pure functions of their inputs.

:mod:`.model` is the VM every reader produces and every writer takes; :mod:`.manifest` reads a
HyperSDK Artifact Manifest v1, :mod:`.ovf` an OVF descriptor (and :mod:`.ova` finds disks in an
OVA without unpacking it); :mod:`.libvirt` and :mod:`.kubevirt` write the target definitions;
:mod:`.naming` decides output names. Nothing here opens a disk or does I/O beyond what is
handed to it, so all of it is tested without processes.
"""
