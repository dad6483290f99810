/* stats.h: what the C benchmarks share: the median of their runs. */
#ifndef BENCH_STATS_H
#define BENCH_STATS_H

/* The median of v[0..n), n >= 1; v is sorted in place. */
double stats_median(double *v, int n);

#endif
