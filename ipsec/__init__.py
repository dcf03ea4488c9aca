"""IKEv2 and ESP/AH: key exchange, SA management and userspace data paths.

Nothing in this package knows about SIP.
"""
