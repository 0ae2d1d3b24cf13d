#include "frontend_tables.h"

#include <algorithm>
#include <cmath>

namespace nemotron {

std::vector<float> hann_window(int length, bool periodic) {
    // torch computes the window in float32: arange * (2 pi / N), cos, * -0.5, + 0.5.
    std::vector<float> w(size_t(std::max(length, 0)));
    if (length == 1) {
        w[0] = 1.0f;
        return w;
    }
    const float step = float(2.0 * M_PI / (periodic ? length : length - 1));
    for (int i = 0; i < length; ++i) {
        w[size_t(i)] = std::cos(float(i) * step) * -0.5f + 0.5f;
    }
    return w;
}

// Slaney's auditory-toolbox mel scale: linear below 1 kHz, logarithmic above.
static const double kMelLinearStep = 200.0 / 3.0;
static const double kMelLogStartHz = 1000.0;
static const double kMelLogStartMel = kMelLogStartHz / kMelLinearStep;
static const double kMelLogStep = std::log(6.4) / 27.0;

static double hz_to_mel(double hz) {
    return hz >= kMelLogStartHz ? kMelLogStartMel + std::log(hz / kMelLogStartHz) / kMelLogStep : hz / kMelLinearStep;
}

static double mel_to_hz(double mel) {
    return mel >= kMelLogStartMel ? kMelLogStartHz * std::exp(kMelLogStep * (mel - kMelLogStartMel)) : mel * kMelLinearStep;
}

std::vector<float> slaney_mel_filterbank(int sample_rate, int n_fft, int n_mels, double fmin, double fmax) {
    // The operation order follows librosa (numpy's rfftfreq and linspace, float32 weights
    // scaled in place) so that the result matches NeMo's buffer to the last bit.
    const int n_bins = n_fft / 2 + 1;
    const double bin_hz = 1.0 / (n_fft * (1.0 / sample_rate));
    const double mel_lo = hz_to_mel(fmin), mel_hi = hz_to_mel(fmax);
    const double mel_step = (mel_hi - mel_lo) / (n_mels + 1);
    std::vector<double> edge_hz(size_t(n_mels) + 2);
    for (int i = 0; i < n_mels + 2; ++i) {
        edge_hz[size_t(i)] = mel_to_hz(i == n_mels + 1 ? mel_hi : i * mel_step + mel_lo);
    }
    std::vector<float> fb(size_t(n_mels) * size_t(n_bins));
    for (int m = 0; m < n_mels; ++m) {
        const double lo = edge_hz[size_t(m)], mid = edge_hz[size_t(m) + 1], hi = edge_hz[size_t(m) + 2];
        const double area_norm = 2.0 / (hi - lo);
        for (int k = 0; k < n_bins; ++k) {
            const double f = k * bin_hz;
            const double rise = (f - lo) / (mid - lo);
            const double fall = (hi - f) / (hi - mid);
            const float tri = float(std::max(0.0, std::min(rise, fall)));
            fb[size_t(m) * size_t(n_bins) + size_t(k)] = float(tri * area_norm);
        }
    }
    return fb;
}

} // namespace nemotron
