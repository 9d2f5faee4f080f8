"""Test support, not shipped: run ``spotguard serve`` as a child process, register it with
a control plane, build AdmissionReviews, follow processes and sockets, run helm, install
the host packages the tests need. Shared by the tests, the benchmarks and the demos."""
