module spotguard.dev/benchmarks/refserver

go 1.22
