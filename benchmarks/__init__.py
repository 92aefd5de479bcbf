"""rlpc's benchmarks and research tools: in the repository, outside the wheel; they import the library, never the other way."""
