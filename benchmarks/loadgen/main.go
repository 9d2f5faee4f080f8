// Command loadgen drives an HTTPS endpoint with keep-alive connections and prints
// throughput and latency percentiles as JSON. It is the benchmark's client: written in Go
// so that the client's own CPU cost stays small next to the Python server it measures,
// and because Go's HTTP client is the API server's.
//
// Closed loop (-rate 0): each of -c connections sends its next request as soon as the
// previous answer arrives; this finds the maximum throughput. Open loop (-rate N): N
// requests per second are scheduled regardless of answers, and latency is measured from
// the scheduled time, so a stalled server cannot hide its queueing delay.
//
// Alongside, it can open what a careless or hostile client would (each reopened when the
// server closes it, so the pressure stays for the whole run):
//
//	-idle N     TLS connections that complete the handshake and send nothing;
//	-trickle N  TLS connections that send a request one byte per second (half stop in
//	            the headers, half in the body);
//	-notls N    TCP connections that never start TLS;
//	-fresh R    R requests per second, each on a new connection (its TLS handshake
//	            time is reported separately).
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

type stats struct {
	Requests int      `json:"requests"`
	Errors   int      `json:"errors"`
	Non200   int      `json:"non200"`
	Wrong    int      `json:"wrong"`
	Seconds  float64  `json:"seconds"`
	RPS      float64  `json:"rps"`
	P50Ms    float64  `json:"p50_ms"`
	P99Ms    float64  `json:"p99_ms"`
	MaxMs    float64  `json:"max_ms"`
	Samples  []string `json:"error_samples,omitempty"`
}

type result struct {
	stats
	Fresh      *stats  `json:"fresh,omitempty"`
	Handshakes *stats  `json:"handshakes,omitempty"`
	BadOpened  int64   `json:"bad_connections_opened"`
	BadOpenAvg float64 `json:"bad_connections_open_avg"`
}

// errWrong marks an answer (HTTP 200) whose body lacks the -expect text.
var errWrong = fmt.Errorf("unexpected answer")

// errBehind marks a request that waited in this client longer than the client's timeout
// before a connection was free to send it: the server had fallen that far behind.
var errBehind = fmt.Errorf("not sent: the server fell behind")

type recorder struct {
	mu        sync.Mutex
	latencies []time.Duration
	s         stats
}

func (r *recorder) record(elapsed time.Duration, status int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.s.Requests++
	switch {
	case err == errWrong:
		r.s.Wrong++
	case err != nil:
		r.s.Errors++
		if len(r.s.Samples) < 5 {
			r.s.Samples = append(r.s.Samples, err.Error())
		}
	case status != http.StatusOK:
		r.s.Non200++
	}
	r.latencies = append(r.latencies, elapsed)
}

func (r *recorder) finish(seconds float64) stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.s
	s.Seconds = seconds
	s.RPS = float64(s.Requests) / seconds
	sort.Slice(r.latencies, func(i, j int) bool { return r.latencies[i] < r.latencies[j] })
	if n := len(r.latencies); n > 0 {
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		s.P50Ms = ms(r.latencies[n/2])
		s.P99Ms = ms(r.latencies[(n*99)/100])
		s.MaxMs = ms(r.latencies[n-1])
	}
	return s
}

func main() {
	target := flag.String("url", "", "endpoint to POST to (GET when -body is empty)")
	caFile := flag.String("ca", "", "CA certificate (PEM) that signed the server's certificate")
	bodyFile := flag.String("body", "", "request body file (JSON)")
	conns := flag.Int("c", 8, "concurrent keep-alive connections")
	duration := flag.Duration("d", 5*time.Second, "how long to send requests")
	rate := flag.Int("rate", 0, "requests per second (0: as fast as possible)")
	idle := flag.Int("idle", 0, "idle TLS connections held open")
	trickle := flag.Int("trickle", 0, "connections trickling a request one byte per second")
	notls := flag.Int("notls", 0, "TCP connections that never start TLS")
	fresh := flag.Int("fresh", 0, "requests per second on new connections")
	warmup := flag.Duration("warmup", 0, "open the bad connections this long before measuring")
	expect := flag.String("expect", "", "text every 200 answer must contain (else: wrong)")
	flag.Parse()
	if *target == "" || *caFile == "" {
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
	tlsConfig := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	parsed, err := url.Parse(*target)
	check(err)
	address := parsed.Host

	stop := make(chan struct{})
	var badOpen, badOpened, badSamples, badSum int64
	var bad sync.WaitGroup
	hold := func(open func() (net.Conn, error), feed func(net.Conn) error) {
		defer bad.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			conn, err := open()
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			atomic.AddInt64(&badOpen, 1)
			atomic.AddInt64(&badOpened, 1)
			done := make(chan struct{})
			go func() { // the server closing the connection ends this round
				feed(conn)
				close(done)
			}()
			select {
			case <-stop:
			case <-done:
			}
			conn.Close()
			atomic.AddInt64(&badOpen, -1)
		}
	}
	dialTLS := func() (net.Conn, error) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", address, tlsConfig)
		if err != nil {
			return nil, err
		}
		return conn, nil
	}
	dialTCP := func() (net.Conn, error) { return net.DialTimeout("tcp", address, 5*time.Second) }
	waitClosed := func(c net.Conn) error {
		_, err := io.Copy(io.Discard, c)
		return err
	}
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", parsed.Path, address, len(body)+1)
	trickleFrom := func(offset int) func(net.Conn) error {
		return func(c net.Conn) error {
			message := []byte(head)
			message = append(message, body...)
			if offset > 0 { // send the headers whole, then the body a byte at a time
				if _, err := c.Write(message[:offset]); err != nil {
					return err
				}
			}
			go waitClosed(c)
			for i := offset; i < len(message); i++ {
				if _, err := c.Write(message[i : i+1]); err != nil {
					return err
				}
				time.Sleep(time.Second)
			}
			return nil
		}
	}
	for i := 0; i < *idle; i++ {
		bad.Add(1)
		go hold(dialTLS, waitClosed)
	}
	for i := 0; i < *trickle; i++ {
		bad.Add(1)
		if i%2 == 0 {
			go hold(dialTLS, trickleFrom(0))
		} else {
			go hold(dialTLS, trickleFrom(len(head)))
		}
	}
	for i := 0; i < *notls; i++ {
		bad.Add(1)
		go hold(dialTCP, waitClosed)
	}
	if *warmup > 0 {
		time.Sleep(*warmup)
	}
	go func() { // the average number of bad connections open while measuring
		ticker := time.NewTicker(100 * time.Millisecond)
		defer ticker.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ticker.C:
				atomic.AddInt64(&badSum, atomic.LoadInt64(&badOpen))
				atomic.AddInt64(&badSamples, 1)
			}
		}
	}()

	transport := &http.Transport{
		TLSClientConfig:     tlsConfig,
		MaxIdleConnsPerHost: *conns,
		MaxConnsPerHost:     *conns,
		IdleConnTimeout:     90 * time.Second,
	}
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	method := http.MethodGet
	if body != nil {
		method = http.MethodPost
	}
	send := func(c *http.Client, ctx context.Context) (int, error) {
		req, err := http.NewRequestWithContext(ctx, method, *target, bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		answer, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode == http.StatusOK && *expect != "" &&
			!bytes.Contains(answer, []byte(*expect)) {
			err = errWrong
		}
		return resp.StatusCode, err
	}

	steady, freshRec, handshakes := &recorder{}, &recorder{}, &recorder{}
	began := time.Now()
	deadline := began.Add(*duration)
	var wg sync.WaitGroup
	if *fresh > 0 {
		freshTransport := &http.Transport{TLSClientConfig: tlsConfig, DisableKeepAlives: true}
		freshClient := &http.Client{Transport: freshTransport, Timeout: 10 * time.Second}
		interval := time.Second / time.Duration(*fresh)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var each sync.WaitGroup
			for next := began; next.Before(deadline); next = next.Add(interval) {
				time.Sleep(time.Until(next))
				each.Add(1)
				go func(planned time.Time) {
					defer each.Done()
					var started time.Time
					trace := &httptrace.ClientTrace{
						TLSHandshakeStart: func() { started = time.Now() },
						TLSHandshakeDone: func(_ tls.ConnectionState, err error) {
							handshakes.record(time.Since(started), http.StatusOK, err)
						},
					}
					ctx := httptrace.WithClientTrace(context.Background(), trace)
					status, err := send(freshClient, ctx)
					freshRec.record(time.Since(planned), status, err)
				}(next)
			}
			each.Wait()
		}()
	}
	if *rate == 0 {
		for i := 0; i < *conns; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					start := time.Now()
					status, err := send(client, context.Background())
					steady.record(time.Since(start), status, err)
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
					if time.Since(planned) > client.Timeout { // would time out unsent anyway
						steady.record(time.Since(planned), 0, errBehind)
						continue
					}
					status, err := send(client, context.Background())
					steady.record(time.Since(planned), status, err)
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
	seconds := time.Since(began).Seconds()
	close(stop)
	res := result{stats: steady.finish(seconds), BadOpened: atomic.LoadInt64(&badOpened)}
	if n := atomic.LoadInt64(&badSamples); n > 0 {
		res.BadOpenAvg = float64(atomic.LoadInt64(&badSum)) / float64(n)
	}
	if *fresh > 0 {
		f, h := freshRec.finish(seconds), handshakes.finish(seconds)
		res.Fresh, res.Handshakes = &f, &h
	}
	check(json.NewEncoder(os.Stdout).Encode(res))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}
