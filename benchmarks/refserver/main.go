// Command refserver is the benchmark's reference server: an HTTPS server, in Go, that
// answers every POST with an AdmissionReview allowing it, after a given amount of work:
// -work-us, a fixed amount of hashing that took that long when the server started (like a
// review, it takes longer when the core gets slower), or -cpu-us, hashing until the
// thread's own CPU clock has advanced that much (a slower core does less of it).
//
// Run beside spotguard's steady phase with spotguard's own CPU time per review, it shows
// the latency this machine gives any server doing that much work per request under the
// same load: where its p99 is as high as spotguard's, the tail belongs to the machine
// (cores shared with the load generator, a hypervisor's stalls), not to the server's
// design; where the fixed work's tail is high and the clock-bounded one's is not, the
// machine ran the same work much slower at times. Go's net/http serves each connection on
// its own goroutine over every core, so no event loop or global lock of spotguard's stack
// is in the reference.
//
// Usage: refserver -addr 127.0.0.1:PORT -cert CERT -key KEY [-work-us N | -cpu-us N]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"os"
	"runtime"
	"sort"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// block is what one unit of work hashes.
var block = make([]byte, 256)

// threadCPU is the calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID).
func threadCPU() time.Duration {
	var ts syscall.Timespec
	_, _, _ = syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 3, uintptr(unsafe.Pointer(&ts)), 0)
	return time.Duration(ts.Nano())
}

// hash does n units of fixed work.
func hash(n int) uint64 {
	h := fnv.New64a()
	for i := 0; i < n; i++ {
		h.Write(block)
	}
	return h.Sum64()
}

// unitsFor is how many units of work took the given time at start, from the median of
// several timed runs (a stall during one run does not skew it).
func unitsFor(target time.Duration) int {
	const probe = 20000
	var runs []time.Duration
	for i := 0; i < 9; i++ {
		began := threadCPU()
		hash(probe)
		runs = append(runs, threadCPU()-began)
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i] < runs[j] })
	return int(float64(target) / (float64(runs[len(runs)/2]) / probe))
}

// spin hashes until this thread has spent budget of CPU time; the goroutine keeps its
// thread meanwhile, so the clock counts only this request's work. The result is kept so
// the compiler keeps the loop.
func spin(budget time.Duration) uint64 {
	if budget <= 0 {
		return 0
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	h := fnv.New64a()
	end := threadCPU() + budget
	for threadCPU() < end {
		for i := 0; i < 8; i++ {
			h.Write(block)
		}
	}
	return h.Sum64()
}

type answer struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Response   map[string]any `json:"response"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	certFile := flag.String("cert", "", "serving certificate (PEM)")
	keyFile := flag.String("key", "", "serving key (PEM)")
	workMicros := flag.Int("work-us", 0, "fixed work per request: what took this many microseconds at start")
	cpuMicros := flag.Int("cpu-us", 0, "work per request until the thread's CPU clock advanced this many microseconds")
	flag.Parse()
	if *certFile == "" || *keyFile == "" {
		fmt.Fprintln(os.Stderr, "refserver: -cert and -key are required")
		os.Exit(2)
	}
	units := 0
	if *workMicros > 0 {
		runtime.LockOSThread() // the calibration reads this thread's clock
		units = unitsFor(time.Duration(*workMicros) * time.Microsecond)
		runtime.UnlockOSThread()
	}
	budget := time.Duration(*cpuMicros) * time.Microsecond
	var sink atomic.Uint64
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		var review struct {
			Request struct {
				UID string `json:"uid"`
			} `json:"request"`
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
		if err == nil {
			err = json.Unmarshal(body, &review)
		}
		if err != nil {
			http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
			return
		}
		sink.Add(hash(units) + spin(budget))
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(answer{
			APIVersion: "admission.k8s.io/v1",
			Kind:       "AdmissionReview",
			Response:   map[string]any{"uid": review.Request.UID, "allowed": true},
		})
	})
	server := &http.Server{Addr: *addr, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(os.Stderr, "refserver: %d units of work (%d us at start) and %d us of CPU per request\n",
		units, *workMicros, *cpuMicros)
	if err := server.ListenAndServeTLS(*certFile, *keyFile); err != nil {
		fmt.Fprintln(os.Stderr, "refserver:", err, sink.Load())
		os.Exit(1)
	}
}
