"""Pure compilation: isolation profiles and config into a plan; seccomp policy."""
