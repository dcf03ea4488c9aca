"""Session border controller: SIP, SDP, media relay, B2BUA and trunks."""

__version__ = "0.1.0"
