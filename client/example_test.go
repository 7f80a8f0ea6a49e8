package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/sselog/sselog/client"
	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// exampleServer starts a real sselog server over a database in a
// temporary directory, for the examples to talk to; stop removes it all.
// A service would instead be given the URL of a running server.
func exampleServer() (url string, stop func()) {
	dir, err := os.MkdirTemp("", "sselog-example")
	if err != nil {
		log.Fatal(err)
	}
	l, err := store.Open(filepath.Join(dir, "sselog.db"), store.Options{})
	if err != nil {
		log.Fatal(err)
	}
	hub := stream.NewHub(l, stream.Options{})
	h := httpapi.NewHandler(l, hub, httpapi.Options{})
	srv := httptest.NewUnstartedServer(h)
	srv.Config.RegisterOnShutdown(h.Close)
	srv.Start()
	return srv.URL, func() {
		ctx := context.Background()
		_ = srv.Config.Shutdown(ctx)
		_ = h.Drain(ctx)
		hub.Close()
		srv.Close()
		_ = l.Close()
		_ = os.RemoveAll(dir)
	}
}

// A service publishes, and another follows the stream from its beginning.
func Example() {
	url, stop := exampleServer()
	defer stop()
	ctx := context.Background()

	c, err := client.New(url)
	if err != nil {
		log.Fatal(err)
	}
	ids, err := c.Publish(ctx, "orders",
		client.Event{Type: "order.created", Data: json.RawMessage(`{"id":42}`)},
		client.Event{Type: "order.paid", Data: json.RawMessage(`{"id":42}`)})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("published", len(ids), "events")

	n := 0
	for item, err := range c.Subscribe(ctx, "orders", client.Beginning()) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(item.Event.Type, string(item.Event.Data), item.ID == ids[n])
		if n++; n == len(ids) {
			break // a follower would go on with live events
		}
	}
	// Output:
	// published 2 events
	// order.created {"id":42} true
	// order.paid {"id":42} true
}

// Publish returns once the events are durable. Failures a retry may fix
// are retried with the call's idempotency key, so the events are stored
// once; a deadline on ctx bounds the retries.
func ExampleClient_Publish() {
	url, stop := exampleServer()
	defer stop()

	c, err := client.New(url, client.WithToken(os.Getenv("SSELOG_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ids, err := c.Publish(ctx, "audit", client.Event{Type: "login", Data: json.RawMessage(`{"user":"ada"}`)})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(ids), len(ids[0]))
	// Output: 1 26
}

// A refusal comes back at once, and errors.Is tells its kind.
func ExampleError() {
	url, stop := exampleServer()
	defer stop()

	c, err := client.New(url)
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.Publish(context.Background(), "audit", client.Event{Type: "reset", Data: json.RawMessage(`1`)})
	var refused *client.Error
	if errors.As(err, &refused) {
		fmt.Println(refused.Status, errors.Is(err, client.ErrInvalid))
	}
	// Output: 400 true
}

// A follower handles resets apart from events: a reset says the stream
// does not continue exactly where the follower was (here, the stream was
// deleted while it was followed).
func ExampleClient_Subscribe() {
	url, stop := exampleServer()
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	c, err := client.New(url)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Publish(ctx, "jobs", client.Event{Type: "progress", Data: json.RawMessage(`50`)}); err != nil {
		log.Fatal(err)
	}
	for item, err := range c.Subscribe(ctx, "jobs", client.Beginning()) {
		if err != nil {
			log.Fatal(err)
		}
		if item.Reset != nil {
			fmt.Println("reset:", item.Reset.Reason)
			break // or rebuild from what follows, and go on
		}
		fmt.Println(item.Event.Type, string(item.Event.Data))
		deleteStream(url, "jobs") // an operator, for the example's sake
	}
	// Output:
	// progress 50
	// reset: deleted
}

// History reads what is stored, page by page, and ends there.
func ExampleClient_History() {
	url, stop := exampleServer()
	defer stop()
	ctx := context.Background()

	c, err := client.New(url)
	if err != nil {
		log.Fatal(err)
	}
	for i := range 3 {
		if _, err := c.Publish(ctx, "metrics", client.Event{Data: json.RawMessage(fmt.Sprint(i))}); err != nil {
			log.Fatal(err)
		}
	}
	for item, err := range c.History(ctx, "metrics", client.Beginning()) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(item.Event.Type, string(item.Event.Data))
	}
	// Output:
	// message 0
	// message 1
	// message 2
}

// A consumer keeps its place in a checkpoint file, and resumes there when
// it starts again, after a crash too.
func ExampleFileCheckpoint() {
	url, stop := exampleServer()
	defer stop()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "consumer")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	c, err := client.New(url)
	if err != nil {
		log.Fatal(err)
	}
	for i := range 4 {
		if _, err := c.Publish(ctx, "emails", client.Event{Type: "send", Data: json.RawMessage(fmt.Sprint(i))}); err != nil {
			log.Fatal(err)
		}
	}
	cp := client.NewFileCheckpoint(filepath.Join(dir, "mailer.checkpoint"))
	// consume handles at most n items, saving each one's id once done.
	consume := func(n int) {
		from, err := client.Resume(ctx, cp, client.Beginning())
		if err != nil {
			log.Fatal(err)
		}
		for item, err := range c.History(ctx, "emails", from) {
			if err != nil {
				log.Fatal(err)
			}
			if item.Event != nil {
				fmt.Println("send", string(item.Event.Data))
			}
			if err := cp.Save(ctx, item.ID); err != nil {
				log.Fatal(err)
			}
			if n--; n == 0 {
				return
			}
		}
	}
	consume(2) // stops, as a crash would
	fmt.Println("restart")
	consume(10)
	// Output:
	// send 0
	// send 1
	// restart
	// send 2
	// send 3
}

// deleteStream deletes a stream as an operator would.
func deleteStream(url, name string) {
	req, err := http.NewRequest(http.MethodDelete, url+"/v1/streams/"+name, nil)
	if err != nil {
		log.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
}
