#include "mel.h"

#include <cmath>

namespace nemotron {

static bool is_power_of_two(int n) { return n > 0 && (n & (n - 1)) == 0; }

mel_frontend::mel_frontend(const model & m) {
    const nemotron_hparams & hp = m.hparams;
    n_fft_ = hp.n_fft;
    hop_ = hp.hop_length;
    n_mels_ = hp.n_mels;
    n_bins_ = hp.n_fft / 2 + 1;
    preemph_ = hp.preemph;
    guard_ = hp.log_zero_guard;
    power_ = hp.mag_power;
    // torch.stft centres a window shorter than n_fft in the frame.
    window_.assign(size_t(n_fft_), 0.0f);
    const size_t offset = size_t(n_fft_ - hp.win_length) / 2;
    std::copy(m.window.begin(), m.window.end(), window_.begin() + offset);
    filterbank_ = m.mel_filterbank;
    // The triangles cover a few bins each: a zero weight adds exactly +0 to the sum (powers are finite
    // and not negative), so only each filter's band is summed.
    for (int mel = 0; mel < n_mels_; ++mel) {
        const float * fb = filterbank_.data() + size_t(mel) * size_t(n_bins_);
        int first = 0, end = n_bins_;
        while (first < end && fb[first] == 0.0f) ++first;
        while (end > first && fb[end - 1] == 0.0f) --end;
        bands_.emplace_back(first, end);
    }

    if (is_power_of_two(n_fft_)) {
        twiddle_.resize(size_t(n_fft_ / 2));
        for (int k = 0; k < n_fft_ / 2; ++k) {
            twiddle_[size_t(k)] = std::polar(1.0, -2.0 * M_PI * k / n_fft_);
        }
        bit_reverse_.resize(size_t(n_fft_));
        int bits = 0;
        while ((1 << bits) < n_fft_) ++bits;
        for (int i = 0; i < n_fft_; ++i) {
            int r = 0;
            for (int b = 0; b < bits; ++b) r |= ((i >> b) & 1) << (bits - 1 - b);
            bit_reverse_[size_t(i)] = size_t(r);
        }
    }
    fft_buf_.resize(size_t(n_fft_));
    power_buf_.resize(size_t(n_bins_));
    reset();
}

void mel_frontend::reset() {
    signal_.assign(size_t(n_fft_ / 2), 0.0f);
    signal_offset_ = 0;
    n_samples_ = 0;
    n_frames_ = 0;
    has_last_ = false;
    last_sample_ = 0.0f;
}

void mel_frontend::push(const float * samples, size_t n, std::vector<float> & frames) {
    signal_.reserve(signal_.size() + n);
    for (size_t i = 0; i < n; ++i) {
        // NeMo's pre-emphasis in float32: y[0] = x[0], y[n] = x[n] - a x[n-1].
        const float x = samples[i];
        const float scaled = preemph_ * last_sample_;
        signal_.push_back(has_last_ ? x - scaled : x);
        last_sample_ = x;
        has_last_ = true;
    }
    n_samples_ += n;
    const size_t hop = size_t(hop_), n_fft = size_t(n_fft_);
    while (size_t(n_frames_) * hop + n_fft <= signal_offset_ + signal_.size()) {
        emit(size_t(n_frames_) * hop - signal_offset_, frames);
    }
    // Keep only what the next frame needs (it starts inside the buffer: hop <= n_fft).
    const size_t next = size_t(n_frames_) * hop - signal_offset_;
    signal_.erase(signal_.begin(), signal_.begin() + std::ptrdiff_t(next));
    signal_offset_ += next;
}

void mel_frontend::finish(std::vector<float> & frames) {
    const int64_t total = frame_count(n_samples_);
    signal_.resize(signal_.size() + size_t(n_fft_ / 2), 0.0f);
    while (n_frames_ < total - 1) {
        emit(size_t(n_frames_) * size_t(hop_) - signal_offset_, frames);
    }
    // NeMo keeps n/hop frames and pads the rest of its (1 + n/hop)-frame tensor with 0.0.
    frames.insert(frames.end(), size_t(n_mels_), 0.0f);
    ++n_frames_;
}

void mel_frontend::emit(size_t start, std::vector<float> & frames) {
    const size_t n_fft = size_t(n_fft_);
    for (size_t i = 0; i < n_fft; ++i) {
        fft_buf_[i] = std::complex<double>(double(signal_[start + i] * window_[i]), 0.0);
    }
    if (!twiddle_.empty()) {
        for (size_t i = 0; i < n_fft; ++i) {
            if (bit_reverse_[i] > i) std::swap(fft_buf_[i], fft_buf_[bit_reverse_[i]]);
        }
        for (size_t len = 2; len <= n_fft; len <<= 1) {
            const size_t step = n_fft / len;
            for (size_t i = 0; i < n_fft; i += len) {
                for (size_t j = 0; j < len / 2; ++j) {
                    const std::complex<double> t = twiddle_[j * step] * fft_buf_[i + j + len / 2];
                    fft_buf_[i + j + len / 2] = fft_buf_[i + j] - t;
                    fft_buf_[i + j] += t;
                }
            }
        }
    } else {
        // A direct DFT of the bins we need: only for n_fft that is not a power of two.
        std::vector<std::complex<double>> in(fft_buf_);
        for (int k = 0; k < n_bins_; ++k) {
            std::complex<double> acc = 0.0;
            for (size_t i = 0; i < n_fft; ++i) {
                acc += in[i] * std::polar(1.0, -2.0 * M_PI * double(k) * double(i) / double(n_fft));
            }
            fft_buf_[size_t(k)] = acc;
        }
    }
    for (int k = 0; k < n_bins_; ++k) {
        // As NeMo: the magnitude in float32, then raised to mag_power.
        const float re = float(fft_buf_[size_t(k)].real()), im = float(fft_buf_[size_t(k)].imag());
        const float magnitude = std::sqrt(re * re + im * im);
        power_buf_[size_t(k)] = power_ == 2.0f ? magnitude * magnitude : std::pow(magnitude, power_);
    }
    for (int m = 0; m < n_mels_; ++m) {
        const float * fb = filterbank_.data() + size_t(m) * size_t(n_bins_);
        double acc = 0.0;
        for (int k = bands_[size_t(m)].first; k < bands_[size_t(m)].second; ++k) acc += double(fb[k]) * double(power_buf_[size_t(k)]);
        frames.push_back(std::log(float(acc) + guard_));
    }
    ++n_frames_;
}

} // namespace nemotron
