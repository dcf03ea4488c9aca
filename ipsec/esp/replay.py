"""Anti-replay sliding window (RFC 4303 §3.4.3 and Appendix A)."""

from __future__ import annotations

from .results import DropReason

_LOW_MASK = 0xFFFFFFFF


class ReplayWindow:
    """The receiver's window of ``size`` sequence numbers ending at ``top``.

    ``check`` runs before the ICV and changes nothing; ``update`` runs only
    after the ICV verified, so a forged packet cannot move the window
    (RFC 4303 §3.4.3).
    """

    __slots__ = ("size", "esn", "top", "bitmap", "window_mask")

    def __init__(self, size: int, esn: bool = True, top: int = 0) -> None:
        self.size = size
        self.esn = esn
        self.top = top
        """The highest authenticated sequence number received (T)."""
        self.bitmap = 1 if top else 0
        """Bit i set: sequence number top - i was received."""
        self.window_mask = (1 << size) - 1

    def check(self, sequence_low: int) -> int | DropReason:
        """Return the full sequence number for a received low 32 bits, or why not."""
        top = self.top
        if sequence_low == (top + 1) & _LOW_MASK and (self.esn or top < _LOW_MASK):
            # In-order arrival, by far the common case: the next number.
            return top + 1
        sequence = self._infer(sequence_low) if self.esn else sequence_low
        if sequence > self.top:
            return sequence
        # Sequence number 0 is never sent (RFC 4303 §3.3.3); a negative value
        # is a guess from before the SA's first sequence space.
        if sequence <= 0:
            return DropReason.OUTSIDE_WINDOW
        offset = self.top - sequence
        if offset >= self.size:
            return DropReason.OUTSIDE_WINDOW
        if self.bitmap >> offset & 1:
            return DropReason.REPLAY
        return sequence

    def update(self, sequence: int) -> None:
        """Mark an authenticated ``sequence`` as received, sliding if it is new."""
        shift = sequence - self.top
        if shift > 0:
            if shift < self.size:
                self.bitmap = ((self.bitmap << shift) | 1) & self.window_mask
            else:
                self.bitmap = 1
            self.top = sequence
        else:
            self.bitmap |= 1 << -shift

    def _infer(self, sequence_low: int) -> int:
        # RFC 4303 Appendix A.2.1: guess the high 32 bits from where the
        # window sits; the ICV then confirms or refutes the guess.
        top_low, top_high = self.top & _LOW_MASK, self.top >> 32
        bottom_low = (top_low - self.size + 1) & _LOW_MASK
        if top_low >= self.size - 1:
            # Case A: the window lies within one sequence space.
            high = top_high if sequence_low >= bottom_low else top_high + 1
        else:
            # Case B: the window straddles two sequence spaces.
            high = top_high - 1 if sequence_low >= bottom_low else top_high
        return (high << 32) | sequence_low
