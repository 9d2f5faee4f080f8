// Command apiload creates objects through the Kubernetes API as fast as -c clients can,
// for -d, and prints throughput and latency percentiles as JSON: the benchmark's client
// for the API server's admission path (benchmarks/bench_apiserver.py).
//
// Each client POSTs -body (an object with metadata.generateName, so every request creates
// a new object) to -url over its own kept-alive HTTP/1.1 connection, authenticated with
// the bearer token in -token-file, and counts an answer as created when its status is
// -expect (201). Written in Go so the client's CPU stays small next to the API server's.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

type result struct {
	Requests   int      `json:"requests"`
	Created    int      `json:"created"`
	Errors     int      `json:"errors"`
	Unexpected int      `json:"unexpected"`
	Samples    []string `json:"samples,omitempty"`
	Seconds    float64  `json:"seconds"`
	RPS        float64  `json:"rps"`
	P50Ms      float64  `json:"p50_ms"`
	P99Ms      float64  `json:"p99_ms"`
	MaxMs      float64  `json:"max_ms"`
}

func main() {
	url := flag.String("url", "", "collection URL to POST to")
	caFile := flag.String("ca", "", "CA certificate (PEM) of the API server")
	tokenFile := flag.String("token-file", "", "file holding a bearer token")
	bodyFile := flag.String("body", "", "object to create (JSON, with metadata.generateName)")
	conns := flag.Int("c", 1, "concurrent clients, one connection each")
	duration := flag.Duration("d", 3*time.Second, "how long to create")
	expect := flag.Int("expect", http.StatusCreated, "the status of a successful create")
	flag.Parse()
	if *url == "" || *caFile == "" || *tokenFile == "" || *bodyFile == "" {
		fmt.Fprintln(os.Stderr, "apiload: -url, -ca, -token-file and -body are required")
		os.Exit(2)
	}
	pem, err := os.ReadFile(*caFile)
	check(err)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		check(fmt.Errorf("no certificate in %s", *caFile))
	}
	token, err := os.ReadFile(*tokenFile)
	check(err)
	body, err := os.ReadFile(*bodyFile)
	check(err)
	authorization := "Bearer " + strings.TrimSpace(string(token))

	var mu sync.Mutex
	var latencies []time.Duration
	res := result{}
	record := func(elapsed time.Duration, status int, err error) {
		mu.Lock()
		defer mu.Unlock()
		res.Requests++
		switch {
		case err != nil:
			res.Errors++
			if len(res.Samples) < 3 {
				res.Samples = append(res.Samples, err.Error())
			}
		case status != *expect:
			res.Unexpected++
			if len(res.Samples) < 3 {
				res.Samples = append(res.Samples, fmt.Sprintf("HTTP %d", status))
			}
		default:
			res.Created++
		}
		latencies = append(latencies, elapsed)
	}

	began := time.Now()
	deadline := began.Add(*duration)
	var wg sync.WaitGroup
	for i := 0; i < *conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{
				Timeout: 30 * time.Second,
				Transport: &http.Transport{
					TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
					MaxIdleConnsPerHost: 1,
					MaxConnsPerHost:     1,
				},
			}
			for time.Now().Before(deadline) {
				start := time.Now()
				req, err := http.NewRequest(http.MethodPost, *url, bytes.NewReader(body))
				check(err)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json")
				req.Header.Set("Authorization", authorization)
				resp, err := client.Do(req)
				status := 0
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				record(time.Since(start), status, err)
			}
		}()
	}
	wg.Wait()
	res.Seconds = time.Since(began).Seconds()
	res.RPS = float64(res.Created) / res.Seconds
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	if n := len(latencies); n > 0 {
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		res.P50Ms = ms(latencies[n/2])
		res.P99Ms = ms(latencies[(n*99)/100])
		res.MaxMs = ms(latencies[n-1])
	}
	check(json.NewEncoder(os.Stdout).Encode(res))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "apiload:", err)
		os.Exit(1)
	}
}
