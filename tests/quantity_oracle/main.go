// quantity-oracle reads one string per line on stdin and prints what Kubernetes'
// resource.ParseQuantity makes of it: the exact decimal value, or "error". spotguard's
// tests compare policies/quantity.py against it.
package main

import (
	"bufio"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/api/resource"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		q, err := resource.ParseQuantity(in.Text())
		if err != nil {
			fmt.Fprintln(out, "error")
			continue
		}
		fmt.Fprintln(out, q.AsDec().String())
	}
}
