"""The sidecar proxy: executes the ProxyConfig pilot generates, next to one service on a VM."""
