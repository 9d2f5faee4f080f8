module spotguard.dev/apiload

go 1.24
