"""vidvec.audio: decoding any audio codec to 16 kHz mono, and framing it into VGGish examples."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from vidvec.audio import AudioFrontend, NoAudioError, audio_examples, decode_audio
from vidvec.decode import DecodeError

FRONTEND = AudioFrontend()
VIDEO = "assets/videos/v_GGSY1Qvo990.mp4"  # AAC 44.1 kHz mono, 800768 samples (18.158 s)


def write_tone(path: Path, codec: str, rate: int = 48000, seconds: float = 2.0, freq: float = 440.0,
               amplitudes: tuple[float, float] = (0.5, 0.1)) -> Path:
    """A stereo sine (same phase, different amplitude per channel) encoded with ``codec``."""
    t = np.arange(int(rate * seconds)) / rate
    wave = np.stack([a * np.sin(2 * np.pi * freq * t) for a in amplitudes]).astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        for start in range(0, wave.shape[1], 4800):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, start:start + 4800]), format="fltp",
                                               layout="stereo")
            frame.sample_rate, frame.pts = rate, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_frontend_numbers_are_vggish_ones():
    # vggish_params / mel_features arithmetic: window round(16000 * 0.025) = 400, hop 160, FFT 2^ceil(log2 400).
    f = FRONTEND
    assert (f.sample_rate, f.mel_bands, f.fmin, f.fmax, f.log_offset) == (16000, 64, 125, 7500, 0.01)
    assert (f.window_samples, f.hop_samples, f.fft_length) == (400, 160, 512)
    assert (f.example_frames, f.example_hop_frames) == (96, 96)
    assert f.example_samples == 95 * 160 + 400 == 15600
    assert f.example_hop_samples == 15360
    assert f.to_dict()["example_seconds"] == 0.96
    assert hash(f) == hash(AudioFrontend())  # usable inside frozen Weights/ModelCard
    with pytest.raises(ValueError, match="mel range"):
        AudioFrontend(fmax=9000)


@pytest.mark.parametrize("n", [0, 399, 15599, 15600, 15600 + 15359, 15600 + 15360, 290528])
def test_example_count_is_the_reference_formula(n):
    # The reference frames the log-mel: frames = 1 + (N - 400) // 160, examples = 1 + (frames - 96) // 96.
    frames = 1 + (n - 400) // 160
    expected = max(0, 1 + (frames - 96) // 96) if n >= 400 else 0
    assert FRONTEND.num_examples(n) == expected
    got = list(audio_examples([np.zeros(n, np.float32)], FRONTEND, pad_short=False))
    assert len(got) == expected


def test_examples_do_not_depend_on_chunking():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(4 * 15360 + 15600 + 123).astype(np.float32)
    whole = list(audio_examples([signal]))
    cuts = np.sort(rng.choice(signal.size, 9, replace=False))
    pieces = list(audio_examples(np.split(signal, cuts)))
    assert len(whole) == len(pieces) == 5
    for k, (a, b) in enumerate(zip(whole, pieces)):
        index, start, end, wave = b
        assert (index, start, end) == (a.index, a.start, a.end) == (k, k * 15360 / 16000, (k * 15360 + 15360) / 16000)
        np.testing.assert_array_equal(wave, signal[k * 15360:k * 15360 + 15600])
        np.testing.assert_array_equal(a.waveform, wave)


def test_short_sound_gives_one_padded_example():
    short = np.linspace(-1, 1, 8000, dtype=np.float32)
    (example,) = audio_examples([short[:3000], short[3000:]])
    assert (example.index, example.start, example.end) == (0, 0.0, 0.96)
    assert example.waveform.shape == (15600,) and example.waveform.dtype == np.float32
    np.testing.assert_array_equal(example.waveform[:8000], short)
    assert not example.waveform[8000:].any()
    assert list(audio_examples([short], pad_short=False)) == []
    assert list(audio_examples([np.zeros(0, np.float32)])) == []


def test_decode_aac_mp4(shared_dir):
    path = shared_dir / VIDEO
    chunks = list(decode_audio(path, chunk_seconds=5.0))
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    assert [c.size for c in chunks[:-1]] == [80000] * (len(chunks) - 1) and 0 < chunks[-1].size <= 80000
    signal = np.concatenate(chunks)
    # 800768 samples at 44.1 kHz -> 290528.6 at 16 kHz.
    assert abs(signal.size - 800768 * 16000 / 44100) < 2
    assert 0.01 < float(np.abs(signal).max()) <= 1.0
    # Streaming: the chunk size changes nothing.
    np.testing.assert_array_equal(np.concatenate(list(decode_audio(path, chunk_seconds=0.7))), signal)


def test_video_examples_and_timestamps(shared_dir):
    examples = list(audio_examples(decode_audio(shared_dir / VIDEO)))
    # video_features' VGGish reference for this video has 18 rows (tests/test_vggish.py checks the fixture).
    assert len(examples) == 18
    assert [e.index for e in examples] == list(range(18))
    np.testing.assert_allclose([e.start for e in examples], np.arange(18) * 0.96, atol=1e-12)
    np.testing.assert_allclose([e.end - e.start for e in examples], 0.96, atol=1e-12)
    assert examples[17].start == 16.32


@pytest.mark.parametrize("codec, suffix, tolerance", [
    ("pcm_s16le", "wav", 0.003),   # 16-bit PCM: exact but for resampling and quantisation
    ("libmp3lame", "mp3", 0.03),   # lossy
    ("libopus", "mkv", 0.03),      # lossy, always 48 kHz inside
])
def test_decode_other_codecs_stereo_48k(tmp_path, codec, suffix, tolerance):
    path = write_tone(tmp_path / f"tone.{suffix}", codec)
    signal = np.concatenate(list(decode_audio(path)))
    assert signal.dtype == np.float32
    assert abs(signal.size - 32000) <= (2 if codec == "pcm_s16le" else 800)
    middle = signal[4000:-4000]
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(middle.size)))
    assert abs(np.argmax(spectrum) * 16000 / middle.size - 440.0) < 2.0
    # The channels' mean (0.5 + 0.1) / 2 = 0.3, as vggish_input's np.mean(data, axis=1); swresample's own
    # downmix would give (0.5 + 0.1) / sqrt(2) = 0.42.
    amplitude = np.sqrt(2 * np.mean(middle.astype(np.float64) ** 2))
    assert abs(amplitude - 0.3) < tolerance


def test_no_audio_stream_is_a_clear_error(shared_dir):
    path = shared_dir / "assets/videos/v_SoccerJuggling_g23_c01.avi"
    with pytest.raises(NoAudioError) as info:
        decode_audio(path)  # at the call, before any chunk is asked for
    assert isinstance(info.value, ValueError)
    assert str(info.value) == f"{path}: has no audio stream"


def test_unreadable_files(tmp_path):
    with pytest.raises(DecodeError, match="file not found"):
        next(decode_audio(tmp_path / "missing.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a media file at all" * 10)
    with pytest.raises(DecodeError, match="cannot open"):
        next(decode_audio(junk))
