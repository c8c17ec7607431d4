"""Customer analytics: summaries from the log, CLV, segments, basket and sequence rules,
propensities and imputed traits — each an estimator whose results are workspace tables."""
