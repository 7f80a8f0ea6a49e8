module github.com/sselog/sselog

go 1.26.8

require (
	github.com/chromedp/chromedp v0.23.0
	github.com/golang-jwt/jwt/v5 v5.3.1
	github.com/gorilla/mux v1.8.1
	github.com/oklog/ulid/v2 v2.1.1
	github.com/tmaxmax/go-sse v0.11.0
	go.etcd.io/bbolt v1.4.3
)

require (
	github.com/chromedp/cdproto v0.159.0 // indirect
	github.com/go-json-experiment/json v0.0.0-20260213210345-44df1a37e875 // indirect
	golang.org/x/sys v0.29.0 // indirect
)
