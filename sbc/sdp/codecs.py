"""Payload types and codecs of an RTP media section (RFC 3551, RFC 8866 §6.6)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .model import MediaDescription


@dataclass(frozen=True, slots=True)
class Codec:
    """An RTP encoding as a=rtpmap names it: name, clock rate and channels."""

    name: str
    clock_rate: int
    channels: int = 1

    @property
    def key(self) -> tuple[str, int, int]:
        """What two payload types must share to carry the same codec.

        Encoding names are case-insensitive (RFC 4855 §3).
        """
        return (self.name.lower(), self.clock_rate, self.channels)

    def rtpmap_value(self, payload_type: str) -> str:
        suffix = f"/{self.channels}" if self.channels != 1 else ""
        return f"{payload_type} {self.name}/{self.clock_rate}{suffix}"


# RFC 3551 §6, Tables 4 and 5: payload types that need no a=rtpmap.
STATIC_PAYLOAD_TYPES: dict[str, Codec] = {
    "0": Codec("PCMU", 8000),
    "3": Codec("GSM", 8000),
    "4": Codec("G723", 8000),
    "5": Codec("DVI4", 8000),
    "6": Codec("DVI4", 16000),
    "7": Codec("LPC", 8000),
    "8": Codec("PCMA", 8000),
    # G.722 is clocked at 8000 Hz for RTP although it samples at 16 kHz.
    "9": Codec("G722", 8000),
    "10": Codec("L16", 44100, 2),
    "11": Codec("L16", 44100),
    "12": Codec("QCELP", 8000),
    "13": Codec("CN", 8000),
    "14": Codec("MPA", 90000),
    "15": Codec("G728", 8000),
    "16": Codec("DVI4", 11025),
    "17": Codec("DVI4", 22050),
    "18": Codec("G729", 8000),
    "25": Codec("CelB", 90000),
    "26": Codec("JPEG", 90000),
    "28": Codec("nv", 90000),
    "31": Codec("H261", 90000),
    "32": Codec("MPV", 90000),
    "33": Codec("MP2T", 90000),
    "34": Codec("H263", 90000),
}

# Payload formats that carry no media of their own: a stream left with only
# these has no codec.
AUXILIARY_CODECS = frozenset(
    ("telephone-event", "cn", "red", "ulpfec", "flexfec", "rtx")
)


# Calls repeat the same few rtpmap values; Codec is immutable, so share them.
@functools.lru_cache(maxsize=1024)
def parse_rtpmap(value: str) -> tuple[str, Codec] | None:
    """Parse ``<pt> <name>/<rate>[/<channels>]``; None when it does not parse."""
    payload_type, _, encoding = value.partition(" ")
    name, _, rest = encoding.strip().partition("/")
    rate, _, channels = rest.partition("/")
    if not payload_type.isdigit() or not name or not rate.isdigit() or len(rate) > 9:
        return None
    if channels and (not channels.isdigit() or len(channels) > 3):
        return None
    return payload_type, Codec(name, int(rate), int(channels or 1))


def codec_table(section: MediaDescription) -> dict[str, Codec]:
    """Map each listed payload type to its codec: a=rtpmap, else RFC 3551.

    A dynamic type without a=rtpmap has no entry: its codec is unknown.
    """
    mapped: dict[str, Codec] = {}
    for kind, value in section.lines:
        if kind != "a" or not value.startswith("rtpmap:"):
            continue
        parsed = parse_rtpmap(value[7:])
        if parsed is not None and parsed[0] not in mapped:
            mapped[parsed[0]] = parsed[1]
    table = {}
    for payload_type in section.formats:
        codec = mapped.get(payload_type) or STATIC_PAYLOAD_TYPES.get(payload_type)
        if codec is not None:
            table[payload_type] = codec
    return table


def is_auxiliary(codec: Codec | None) -> bool:
    return codec is not None and codec.name.lower() in AUXILIARY_CODECS


# Attributes whose value starts with the payload type they describe.
PAYLOAD_ATTRIBUTES = frozenset(("rtpmap", "fmtp", "rtcp-fb"))


def keep_formats(section: MediaDescription, kept: list[str]) -> None:
    """Narrow the m= format list to ``kept`` and drop attributes of the others."""
    dropped = set(section.formats) - set(kept)
    section.formats = kept
    if dropped:
        section.lines = [
            line for line in section.lines if payload_type_of(line) not in dropped
        ]


def payload_type_of(line: tuple[str, str]) -> str | None:
    """The payload type an a=rtpmap/fmtp/rtcp-fb line refers to, else None."""
    kind, value = line
    if kind != "a":
        return None
    name, colon, rest = value.partition(":")
    if not colon or name not in PAYLOAD_ATTRIBUTES:
        return None
    return rest.partition(" ")[0]
