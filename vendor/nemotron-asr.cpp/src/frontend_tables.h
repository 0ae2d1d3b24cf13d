// The window and mel filterbank of NeMo's AudioToMelSpectrogramPreprocessor, rebuilt for
// files that do not carry them (the asr layout has no window, and its converter omits the
// filterbank when librosa is missing).
#pragma once

#include <vector>

namespace nemotron {

// torch.hann_window(length, periodic).
std::vector<float> hann_window(int length, bool periodic);

// librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False, norm="slaney"), row-major
// [n_mels][n_fft/2 + 1], computed in double precision and rounded once, as librosa does.
std::vector<float> slaney_mel_filterbank(int sample_rate, int n_fft, int n_mels, double fmin, double fmax);

} // namespace nemotron
