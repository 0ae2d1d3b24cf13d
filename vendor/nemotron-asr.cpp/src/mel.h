// The log-mel frontend of NeMo's AudioToMelSpectrogramPreprocessor, fed in pieces.
//
// NeMo computes the features of a whole signal at once: pre-emphasis, a centred STFT
// (n_fft/2 zeros on each side), |X| squared, the mel filterbank and log(x + guard). Its
// frame count is 1 + n/hop, of which it keeps n/hop and sets the last to zero. A frame only
// depends on the n_fft samples around it, so the same frames come out however the audio is
// split, as soon as their samples have arrived.
#pragma once

#include "model.h"

#include <complex>
#include <cstddef>
#include <utility>
#include <vector>

namespace nemotron {

class mel_frontend {
public:
    explicit mel_frontend(const model & m);

    // Appends samples; writes every frame that is now complete to `frames` (n_mels each).
    void push(const float * samples, size_t n, std::vector<float> & frames);

    // Ends the signal: the remaining frames with zero padding, the last one set to zero as
    // NeMo masks it.
    void finish(std::vector<float> & frames);

    void reset();

    int n_mels() const { return n_mels_; }

    // Frames a whole signal of n samples gives (NeMo's STFT frame count).
    int64_t frame_count(size_t n) const { return int64_t(n / size_t(hop_)) + 1; }

private:
    void emit(size_t start, std::vector<float> & frames);

    int n_fft_, hop_, n_mels_, n_bins_;
    float preemph_, guard_, power_;
    std::vector<float> window_;      // n_fft long, the window centred in it
    std::vector<float> filterbank_;  // [n_mels][n_bins]
    std::vector<std::pair<int, int>> bands_; // per mel, the bins [first, end) its filter is not zero on
    std::vector<std::complex<double>> twiddle_;
    std::vector<size_t> bit_reverse_;

    std::vector<float> signal_;      // pre-emphasised samples, with n_fft/2 zeros in front
    size_t signal_offset_ = 0;       // index in the whole padded signal of signal_[0]
    size_t n_samples_ = 0;
    int64_t n_frames_ = 0;
    float last_sample_ = 0.0f;
    bool has_last_ = false;

    std::vector<std::complex<double>> fft_buf_;
    std::vector<float> power_buf_;
};

} // namespace nemotron
