"""Audio for audio models: decode a file's sound track to 16 kHz mono and cut it into fixed-length examples.

Decoding is streaming (bounded memory): PyAV demuxes and decodes the first audio stream, whatever its codec
(AAC, MP3, Opus, Vorbis, FLAC, PCM, ...), and swresample resamples it to the target rate chunk by chunk.
Channels are kept through the resampler and averaged afterwards, because VGGish's reference input code
(``vggish_input.waveform_to_examples``) takes the plain mean of the channels, while swresample's own stereo
to mono downmix weighs each channel by 1/sqrt(2) (and other layouts by other factors).

Samples are float32 on FFmpeg's float scale, which is the reference's (it reads 16-bit WAV and divides by
32768). Each channel is clipped to [-1, 1] before the mean: lossy decoders overshoot (the AAC track of
v_GGSY1Qvo990.mp4 peaks at 1.09) and the reference's 16-bit WAV clipped those peaks when it was written
(at the source rate, so before resampling; here after it, which differs only next to clipped peaks).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import NamedTuple

import av
import av.error
import numpy as np

from vidvec.decode import DecodeError, PacketTrack, decoded_frames

__all__ = ["AudioFrontend", "AudioExample", "NoAudioError", "decode_audio", "audio_examples"]


@dataclass(frozen=True)
class AudioFrontend:
    """How an audio model wants its sound: sample rate, log-mel analysis and example framing.

    The defaults are VGGish's (``vggish_params.py``): 25 ms periodic-Hann windows every 10 ms, FFT of the
    next power of two (512 samples at 16 kHz), 64 HTK mel bands from 125 to 7500 Hz, log(mel + 0.01), and
    examples of 96 frames (0.96 s) every 96 frames, without overlap. Frozen and hashable: it is a weights
    entry's preprocessing and part of a run's settings hash.
    """

    sample_rate: int = 16000
    window_seconds: float = 0.025
    hop_seconds: float = 0.010
    mel_bands: int = 64
    fmin: float = 125.0
    fmax: float = 7500.0
    example_seconds: float = 0.96
    example_hop_seconds: float = 0.96
    log_offset: float = 0.01

    def __post_init__(self) -> None:
        if self.sample_rate < 1:
            raise ValueError(f"sample_rate must be positive, not {self.sample_rate}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"mel range must satisfy 0 <= fmin < fmax <= {self.sample_rate / 2:g} Hz, "
                             f"not {self.fmin:g}-{self.fmax:g}")
        if self.example_frames < 1 or self.example_hop_frames < 1 or self.hop_samples < 1:
            raise ValueError("window, hop and example lengths must each span at least one sample/frame")

    def describe(self) -> str:
        return (f"{self.example_seconds:g} s log-mel examples ({self.mel_bands} bands) of the audio at "
                f"{self.sample_rate / 1000:g} kHz mono")

    def to_dict(self) -> dict:
        return asdict(self)

    # Rounded as the reference rounds them (mel_features.log_mel_spectrogram, vggish_input).
    @property
    def window_samples(self) -> int:
        return int(round(self.sample_rate * self.window_seconds))

    @property
    def hop_samples(self) -> int:
        return int(round(self.sample_rate * self.hop_seconds))

    @property
    def fft_length(self) -> int:
        """The next power of two at or above the window (512 for 400 samples)."""
        return 1 << (self.window_samples - 1).bit_length()

    @property
    def example_frames(self) -> int:
        return int(round(self.example_seconds / self.hop_seconds))

    @property
    def example_hop_frames(self) -> int:
        return int(round(self.example_hop_seconds / self.hop_seconds))

    @property
    def example_samples(self) -> int:
        """Samples one example needs: (frames - 1) hops plus one window (15600 for VGGish)."""
        return (self.example_frames - 1) * self.hop_samples + self.window_samples

    @property
    def example_hop_samples(self) -> int:
        """Samples between the starts of consecutive examples (15360 for VGGish)."""
        return self.example_hop_frames * self.hop_samples

    def num_examples(self, num_samples: int) -> int:
        """How many whole examples ``num_samples`` samples hold (a trailing partial one is dropped, as in the
        reference: floor((N - example_samples) / example_hop_samples) + 1, or 0 when N is too short)."""
        if num_samples < self.example_samples:
            return 0
        return (num_samples - self.example_samples) // self.example_hop_samples + 1


class NoAudioError(ValueError):
    """A file has no audio stream, so an audio model cannot use it."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(f"{os.fspath(path)}: has no audio stream")
        self.path = os.fspath(path)


def decode_audio(path: str | os.PathLike, sample_rate: int = 16000,
                 chunk_seconds: float = 10.0, track: PacketTrack | None = None) -> Iterator[np.ndarray]:
    """The first audio stream of ``path`` as mono float32 chunks at ``sample_rate`` Hz.

    Chunks hold ``chunk_seconds`` of sound (the last one at most that); concatenated they are the whole track
    from its first decoded sample. Damaged packets are skipped, as the video decoder does; with a ``track``
    (which counts them) the sound ends at the first one instead, since what follows a lost packet would be
    shifted in time.
    Raises, when called (not at the first chunk): NoAudioError when the file has no audio stream, DecodeError
    (one-line reason, without the path) when it cannot be opened or its codec has no decoder.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise DecodeError("file not found" if not os.path.exists(p) else "not a file")
    try:
        container = av.open(p, mode="r", metadata_errors="replace")
    except (av.error.FFmpegError, OSError) as err:
        raise DecodeError(f"cannot open: {' '.join(str(getattr(err, 'strerror', None) or err).split())}") from None
    if not container.streams.audio or container.streams.audio[0].codec_context is None:
        container.close()
        if not container.streams.audio:
            raise NoAudioError(p)
        raise DecodeError("unsupported audio codec: no decoder in this FFmpeg build")
    return _chunks(container, sample_rate, max(1, int(round(chunk_seconds * sample_rate))), track)


def _chunks(container: av.container.InputContainer, sample_rate: int, chunk: int,
            track: PacketTrack | None) -> Iterator[np.ndarray]:
    with container:
        stream = container.streams.audio[0]
        # layout=None keeps the source's channels (averaged in _mono); planar float gives (channels, samples).
        resampler = av.AudioResampler(format="fltp", layout=None, rate=sample_rate)
        pending: list[np.ndarray] = []
        size = 0
        frames = decoded_frames(container, stream, track)
        if track is not None:
            frames = itertools.takewhile(lambda _: not track.errors, frames)
        for frame in itertools.chain(frames, [None]):  # None flushes the resampler
            for out in resampler.resample(frame):
                pending.append(_mono(out))
                size += pending[-1].size
            if size >= chunk or (frame is None and size):
                joined = np.concatenate(pending)
                whole = size - size % chunk
                yield from (joined[i:i + chunk] for i in range(0, whole, chunk))
                pending, size = [joined[whole:]], size - whole
                if frame is None and size:
                    yield pending[0]


def _mono(frame: av.AudioFrame) -> np.ndarray:
    channels = frame.to_ndarray()  # (channels, samples), planar float
    return np.clip(channels, -1.0, 1.0).mean(axis=0, dtype=np.float64).astype(np.float32)


class AudioExample(NamedTuple):
    """One example: its index, its span in seconds from the track's first sample, and its samples."""

    index: int
    start: float
    end: float
    waveform: np.ndarray  # (example_samples,) float32


def audio_examples(chunks: Iterable[np.ndarray], frontend: AudioFrontend = AudioFrontend(),
                   pad_short: bool = True) -> Iterator[AudioExample]:
    """Cut a mono stream (chunks as ``decode_audio`` gives them) into the examples the model sees.

    Example k is samples [k * hop, k * hop + example_samples) (hop 15360, 15600 samples for VGGish) and spans
    [k * example_hop_seconds, k * example_hop_seconds + example_seconds) — the 96 log-mel frames the reference
    frames into example k. The count is the reference's: a trailing partial example is dropped.

    Sound shorter than one example (0.975 s for VGGish), where the reference gives no example at all, gives one
    example zero-padded (silence) at the end when ``pad_short`` (so every video with sound gets a vector),
    else nothing. A track without any samples gives nothing.
    """
    need, hop, rate = frontend.example_samples, frontend.example_hop_samples, frontend.sample_rate
    span = frontend.example_frames * frontend.hop_samples  # in samples: 96 hops = 0.96 s
    buffer = np.zeros(0, np.float32)
    index = 0
    for chunk in chunks:
        buffer = np.concatenate([buffer, np.asarray(chunk, np.float32).reshape(-1)])
        start = 0
        while buffer.size - start >= need:
            first = index * hop  # times from sample counts, so that 17 * 0.96 prints as 16.32
            yield AudioExample(index, first / rate, (first + span) / rate, buffer[start:start + need].copy())
            index += 1
            start += hop
        buffer = buffer[start:]
    if index == 0 and pad_short and buffer.size:
        padded = np.zeros(need, np.float32)
        padded[:buffer.size] = buffer
        yield AudioExample(0, 0.0, span / rate, padded)
