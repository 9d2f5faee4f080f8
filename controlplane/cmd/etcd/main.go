// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 at the
// version pinned in this module's go.mod (upstream's own module cannot be
// "go install"ed because of its replace directives).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
