// Command loadgen drives an HTTPS endpoint with keep-alive connections and prints
// throughput and latency percentiles as JSON. It is the benchmark's client: written in Go
// so that the client's own CPU cost stays small next to the Python server it measures.
//
// Closed loop (-rate 0): each of -c connections sends its next request as soon as the
// previous answer arrives; this finds the maximum throughput. Open loop (-rate N): N
// requests per second are scheduled regardless of answers, and latency is measured from
// the scheduled time, so a stalled server cannot hide its queueing delay.
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
	"sync"
	"time"
)

type result struct {
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	Non200   int     `json:"non200"`
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"rps"`
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
}

func main() {
	url := flag.String("url", "", "endpoint to POST to (GET when -body is empty)")
	caFile := flag.String("ca", "", "CA certificate (PEM) that signed the server's certificate")
	bodyFile := flag.String("body", "", "request body file (JSON)")
	conns := flag.Int("c", 8, "concurrent keep-alive connections")
	duration := flag.Duration("d", 5*time.Second, "how long to send requests")
	rate := flag.Int("rate", 0, "requests per second (0: as fast as possible)")
	flag.Parse()
	if *url == "" || *caFile == "" {
		fmt.Fprintln(os.Stderr, "loadgen: -url and -ca are required")
		os.Exit(2)
	}
	pem, err := os.ReadFile(*caFile)
	check(err)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		check(fmt.Errorf("no certificate in %s", *caFile))
	}
	var body []byte
	if *bodyFile != "" {
		body, err = os.ReadFile(*bodyFile)
		check(err)
	}
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: *conns,
		MaxConnsPerHost:     *conns,
		IdleConnTimeout:     90 * time.Second,
	}
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}

	send := func() (int, error) {
		method := http.MethodGet
		if body != nil {
			method = http.MethodPost
		}
		req, err := http.NewRequest(method, *url, bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, err
	}

	var mu sync.Mutex
	var latencies []time.Duration
	res := result{}
	record := func(start time.Time, status int, err error) {
		elapsed := time.Since(start)
		mu.Lock()
		defer mu.Unlock()
		res.Requests++
		switch {
		case err != nil:
			res.Errors++
		case status != http.StatusOK:
			res.Non200++
		}
		latencies = append(latencies, elapsed)
	}

	began := time.Now()
	deadline := began.Add(*duration)
	var wg sync.WaitGroup
	if *rate == 0 {
		for i := 0; i < *conns; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					start := time.Now()
					status, err := send()
					record(start, status, err)
				}
			}()
		}
	} else {
		schedule := make(chan time.Time, *rate)
		for i := 0; i < *conns; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for planned := range schedule {
					status, err := send()
					record(planned, status, err)
				}
			}()
		}
		interval := time.Second / time.Duration(*rate)
		for next := began; next.Before(deadline); next = next.Add(interval) {
			time.Sleep(time.Until(next))
			schedule <- next
		}
		close(schedule)
	}
	wg.Wait()
	res.Seconds = time.Since(began).Seconds()
	res.RPS = float64(res.Requests) / res.Seconds
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
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}
