"""LangChain adapter for rlpc (a thin layer over rlpc_core's public API). Contents arrive with the adapter work."""
