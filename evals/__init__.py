"""evalloop scoring: rule suites, similarity, judges, ratings, benchmarks."""
