// A clickhouse-go client of the SQL endpoint over HTTP and over the native protocol, as Grafana's ClickHouse data
// source uses them: prints one line per protocol and compression setting, which tests/e2e/test_sql_go.py
// compares. Arguments: the HTTP interface's host:port, the admin key, the native protocol's host:port; then,
// optionally, the HTTPS interface's host:port, the native protocol's over TLS, and the PEM file of the authority
// their certificate is verified against.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/ClickHouse/ch-go/compress"
	"github.com/ClickHouse/clickhouse-go/v2"
)

func main() {
	// gzip, deflate and br are HTTP's compression: the answers come compressed when the client also sets
	// enable_http_compression, as ClickHouse wants it (without it they come as they are, which the client reads).
	httpCompression := clickhouse.Settings{"enable_http_compression": 1}
	methods := []struct {
		name        string
		compression *clickhouse.Compression
		settings    clickhouse.Settings
	}{
		{"none", nil, nil},
		{"lz4", &clickhouse.Compression{Method: clickhouse.CompressionLZ4}, nil},
		{"zstd", &clickhouse.Compression{Method: clickhouse.CompressionZSTD}, nil},
		{"gzip", &clickhouse.Compression{Method: clickhouse.CompressionGZIP}, nil},
		{"gzip-http", &clickhouse.Compression{Method: clickhouse.CompressionGZIP}, httpCompression},
		{"deflate-http", &clickhouse.Compression{Method: clickhouse.CompressionDeflate}, httpCompression},
		{"br-http", &clickhouse.Compression{Method: clickhouse.CompressionBrotli}, httpCompression},
	}
	if len(os.Args) > 6 { // over TLS only
		authority, err := os.ReadFile(os.Args[6])
		if err != nil {
			fmt.Println("authority:", err)
			return
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(authority) {
			fmt.Println("authority: no certificate in", os.Args[6])
			return
		}
		verified := &tls.Config{RootCAs: roots}
		fmt.Println("tls-http", probe(clickhouse.HTTP, os.Args[4], methods[1].compression, nil, verified))
		fmt.Println("tls-native", probe(clickhouse.Native, os.Args[5], methods[1].compression, nil, verified))
		fmt.Println("tls-untrusted", probe(clickhouse.Native, os.Args[5], nil, nil, &tls.Config{}))
		return
	}
	for _, m := range methods {
		fmt.Println(m.name, probe(clickhouse.HTTP, os.Args[1], m.compression, m.settings, nil))
	}
	// The native protocol (Grafana's default), at the address given third.
	for _, m := range methods[:3] {
		fmt.Println("native-"+m.name, probe(clickhouse.Native, os.Args[3], m.compression, m.settings, nil))
	}
	for _, method := range []compress.Method{compress.LZ4, compress.ZSTD, compress.None} {
		fmt.Println("body", method, compressedBody(method))
	}
}

// compressedBody sends a query in ClickHouse's compressed blocks as ch-go (the client's protocol library) makes
// them, with decompress=1, and returns the answer.
func compressedBody(method compress.Method) string {
	w := compress.NewWriter(compress.LevelZero, method)
	if err := w.Compress([]byte("SELECT 6 * 7")); err != nil {
		return "compress: " + err.Error()
	}
	query := url.Values{"decompress": {"1"}, "user": {"pingstream"}, "password": {os.Args[2]}}
	res, err := http.Post("http://"+os.Args[1]+"/?"+query.Encode(), "application/octet-stream", bytes.NewReader(w.Data))
	if err != nil {
		return "post: " + err.Error()
	}
	defer res.Body.Close()
	answer, _ := io.ReadAll(res.Body)
	return fmt.Sprintf("%d %q", res.StatusCode, answer)
}

func probe(protocol clickhouse.Protocol, addr string, compression *clickhouse.Compression, settings clickhouse.Settings,
	secure *tls.Config) string {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{addr},
		Protocol:    protocol,
		Auth:        clickhouse.Auth{Database: "pingstream", Username: "pingstream", Password: os.Args[2]},
		Compression: compression,
		Settings:    settings,
		TLS:         secure,
	})
	if err != nil {
		return "open: " + err.Error()
	}
	defer conn.Close()
	// A deadline, as Grafana's queries have: the client then asks for max_execution_time.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := conn.Ping(ctx); err != nil {
		return "ping: " + err.Error()
	}
	var rows uint64
	var sum string
	if err := conn.QueryRow(ctx, "SELECT count(), toString(sum(number)) FROM numbers(300000)").Scan(&rows, &sum); err != nil {
		return "aggregate: " + err.Error()
	}
	var kinds uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM pings WHERE kind = {k:String}", clickhouse.Named("k", "success")).Scan(&kinds); err != nil {
		return "parameter: " + err.Error()
	}
	result, err := conn.Query(ctx, "SELECT number, toString(number), toLowCardinality(toString(number % 7)), "+
		"[number], if(number % 2 = 0, NULL, number), toDateTime64('2026-12-02 10:00:00', 6, 'UTC') FROM numbers(200000)")
	if err != nil {
		return "rows: " + err.Error()
	}
	count := 0
	for result.Next() {
		var (
			n     uint64
			s, lc string
			arr   []uint64
			maybe *uint64
			at    time.Time
		)
		if err := result.Scan(&n, &s, &lc, &arr, &maybe, &at); err != nil {
			return "scan: " + err.Error()
		}
		if s != fmt.Sprint(n) || len(arr) != 1 || arr[0] != n || (maybe == nil) != (n%2 == 0) || at.Unix() != 1796205600 {
			return fmt.Sprintf("row %d read wrong", n)
		}
		count++
	}
	if err := result.Err(); err != nil {
		return "rows: " + err.Error()
	}
	var missing string
	err = conn.QueryRow(ctx, "SELECT * FROM nowhere").Scan(&missing)
	return fmt.Sprintf("ok %d %s %d %d error=%v", rows, sum, kinds, count, err != nil)
}
