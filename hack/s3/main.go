// tensile-s3: an in-memory S3-compatible server (gofakes3) for the tests of s3:// datasets and
// checkpoints. It listens on -addr (loopback), prints "listening on ADDR" once it accepts
// connections, and keeps nothing after it exits.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	backend := s3mem.New()
	faker := gofakes3.New(backend, gofakes3.WithAutoBucket(true), gofakes3.WithLogger(gofakes3.DiscardLog()))
	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen %s: %v", *addr, err)
	}
	fmt.Fprintf(os.Stdout, "listening on %s\n", listener.Addr().String())
	if err := http.Serve(listener, faker.Server()); err != nil {
		log.Fatal(err)
	}
}
