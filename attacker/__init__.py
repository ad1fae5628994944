"""The eavesdropper: wire capture, the interceptor service, ADRA, AMIA and attack metrics."""
