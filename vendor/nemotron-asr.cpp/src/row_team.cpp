#include "row_team.h"

#include <algorithm>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace nemotron {

void row_team::run(int n, int grain, work_fn work, const void * context) const {
    grain = std::max(1, grain);
    const int grains = (n + grain - 1) / grain;
#ifdef _OPENMP
    if (n_threads_ > 1 && grains > 1) {
#pragma omp parallel num_threads(std::min(n_threads_, grains))
        {
            const int parts = omp_get_num_threads(), part = omp_get_thread_num();
            const int begin = std::min(n, grains * part / parts * grain), end = std::min(n, grains * (part + 1) / parts * grain);
            if (begin < end) work(begin, end, context);
        }
        return;
    }
#endif
    (void) grains;
    if (n > 0) work(0, n, context);
}

} // namespace nemotron
