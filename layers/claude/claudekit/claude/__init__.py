"""The Claude client: admission, breaker, retry, fallback, the call, usage and cost."""
