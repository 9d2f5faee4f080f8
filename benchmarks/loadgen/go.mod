module spotguard.dev/loadgen

go 1.24
