// Command peer-go is the Go (gorilla/websocket) peer for benches/fanout.sh.
//
// It relays one bookcast stream per symbol, <sym><suffix> (-stream, default @depth@0ms,
// bookcast's real-time diff; e.g. @depth or @trade): one upstream connection to a bookcast instance carries every
// symbol's <sym><suffix> as combined messages, and clients connect at /ws/<sym><suffix>. The
// raw `data` payload of each message is sliced out (not re-serialized), wrapped once in a
// websocket.PreparedMessage (the frame is built once and shared), and queued to every client
// subscribed to that stream. Each client has its own writer goroutine behind a bounded channel;
// a client whose channel is full is a slow consumer and is closed with 4008, as bookcast does.
//
// Build offline against Debian's golang-github-gorilla-websocket-dev:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o peer-go main.go
//
// Run: peer-go -listen 127.0.0.1:9601 -upstream 127.0.0.1:9600 [-stream @depth@0ms]
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// Per-client queue of pending events. A depth diff is ~120 bytes, so 256 events is about
	// 5 seconds of the busiest symbol (100/s) plus the kernel's socket buffer: the same order as
	// bookcast's 256 KiB bound, without allocating 4096 slots per connection up front.
	sendQueue  = 256
	writeWait  = 10 * time.Second
	pongWait   = 60 * time.Second
	pingPeriod = 20 * time.Second
	maxMessage = 4096
)

type client struct {
	conn    *websocket.Conn
	send    chan *websocket.PreparedMessage
	done    chan struct{}
	once    sync.Once
	evicted bool // written before done is closed by evict, read after
}

// stop ends the writer; evict also makes it send 4008 first.
func (c *client) stop(evicted bool) {
	c.once.Do(func() {
		c.evicted = evicted
		close(c.done)
	})
}

type topic struct {
	mu      sync.RWMutex
	clients map[*client]struct{}
}

// hub maps stream names, as the upstream spells them (btcusdt@depth@0ms), to subscribers. The map
// itself is fixed at start-up; only each topic's subscriber set changes, under the topic's own
// lock.
type hub map[string]*topic

func (h hub) publish(stream string, payload []byte) {
	t := h[stream]
	if t == nil {
		return
	}
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, payload)
	if err != nil {
		log.Fatalf("prepare: %v", err)
	}
	t.mu.RLock()
	for c := range t.clients {
		select {
		case c.send <- pm:
		default:
			c.stop(true) // queue full: slow consumer
		}
	}
	t.mu.RUnlock()
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferPool: &sync.Pool{}, // prepared frames bypass the write buffer; don't hold one per connection
	CheckOrigin:     func(*http.Request) bool { return true },
}

func (h hub) serveWS(w http.ResponseWriter, r *http.Request) {
	// /ws/<stream>[/<stream>...]; query (timeUnit=MICROSECOND) accepted and ignored: the
	// upstream already sends microseconds.
	var topics []*topic
	for _, s := range strings.Split(strings.TrimPrefix(r.URL.Path, "/ws/"), "/") {
		t := h[canonical(s)]
		if t == nil {
			http.Error(w, fmt.Sprintf("unknown stream %q", s), http.StatusBadRequest)
			return
		}
		topics = append(topics, t)
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &client{conn: conn, send: make(chan *websocket.PreparedMessage, sendQueue), done: make(chan struct{})}
	for _, t := range topics {
		t.mu.Lock()
		t.clients[c] = struct{}{}
		t.mu.Unlock()
	}
	go c.writePump()
	c.readPump()
	for _, t := range topics {
		t.mu.Lock()
		delete(t.clients, c)
		t.mu.Unlock()
	}
}

// canonical is a client's stream name as the upstream spells it in "stream": bookcast matches
// the symbol case-insensitively and the rest exactly (aggTrade, bookTicker), and names the
// symbol in lower case.
func canonical(name string) string {
	if at := strings.IndexByte(name, '@'); at >= 0 {
		return strings.ToLower(name[:at]) + name[at:]
	}
	return strings.ToLower(name)
}

// readPump handles control frames (the close handshake, pongs) until the connection ends.
func (c *client) readPump() {
	defer c.stop(false)
	c.conn.SetReadLimit(maxMessage)
	c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error { return c.conn.SetReadDeadline(time.Now().Add(pongWait)) })
	for {
		if _, _, err := c.conn.NextReader(); err != nil {
			return
		}
	}
}

func (c *client) writePump() {
	ticker := time.NewTicker(pingPeriod)
	defer func() {
		ticker.Stop()
		c.conn.Close()
	}()
	for {
		select {
		case pm := <-c.send:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WritePreparedMessage(pm); err != nil {
				return
			}
		case <-ticker.C:
			if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err != nil {
				return
			}
		case <-c.done:
			if c.evicted {
				msg := websocket.FormatCloseMessage(4008, "slow consumer: send queue full")
				c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(writeWait))
			}
			return
		}
	}
}

// suffixPattern is what fanout.sh accepts as STREAM.
var suffixPattern = regexp.MustCompile(`^@[A-Za-z0-9_@]+$`)

var (
	streamPrefix = []byte(`{"stream":"`)
	dataPrefix   = []byte(`","data":`)
)

// relay reads combined messages from upstream and publishes each raw payload, sliced out of
// {"stream":"<name>","data":<payload>} without parsing it.
func relay(h hub, conn *websocket.Conn) {
	for {
		_, msg, err := conn.ReadMessage() // a fresh buffer per message: the payload is shared onwards
		if err != nil {
			log.Fatalf("upstream: %v", err)
		}
		if !bytes.HasPrefix(msg, streamPrefix) || msg[len(msg)-1] != '}' {
			continue
		}
		rest := msg[len(streamPrefix):]
		end := bytes.Index(rest, dataPrefix)
		if end < 0 {
			continue
		}
		h.publish(string(rest[:end]), rest[end+len(dataPrefix):len(rest)-1])
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:9601", "address to serve on")
	upstream := flag.String("upstream", "127.0.0.1:9443", "bookcast instance to relay from")
	suffix := flag.String("stream", "@depth@0ms", "stream name after the symbol: relays <sym><suffix> for every symbol")
	flag.Parse()
	if !suffixPattern.MatchString(*suffix) {
		log.Fatalf("-stream must match %s (got %q)", suffixPattern, *suffix)
	}

	resp, err := http.Get("http://" + *upstream + "/api/v3/exchangeInfo")
	if err != nil {
		log.Fatalf("exchangeInfo: %v", err)
	}
	info, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		log.Fatalf("exchangeInfo: status %d, %v", resp.StatusCode, err)
	}
	var parsed struct {
		Symbols []struct{ Symbol string } `json:"symbols"`
	}
	if err := json.Unmarshal(info, &parsed); err != nil || len(parsed.Symbols) == 0 {
		log.Fatalf("exchangeInfo: no symbols (%v)", err)
	}
	h := hub{}
	var streams []string
	for _, s := range parsed.Symbols {
		name := strings.ToLower(s.Symbol) + *suffix
		h[name] = &topic{clients: map[*client]struct{}{}}
		streams = append(streams, name)
	}

	url := "ws://" + *upstream + "/stream?streams=" + strings.Join(streams, "/") + "&timeUnit=MICROSECOND"
	up, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		log.Fatalf("upstream %s: %v", url, err)
	}
	go relay(h, up)

	mux := http.NewServeMux()
	mux.HandleFunc("/ws/", h.serveWS)
	mux.HandleFunc("/api/v3/exchangeInfo", func(w http.ResponseWriter, r *http.Request) {
		// An explicit length: bookcast-load reads a plain body, not a chunked one.
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(info)))
		w.Write(info)
	})
	log.Printf("peer-go: %d <sym>%s streams from %s, listening on %s", len(streams), *suffix, *upstream, *listen)
	log.Fatal(http.ListenAndServe(*listen, mux))
}
