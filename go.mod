module github.com/sselog/sselog

go 1.26.8

require (
	github.com/golang-jwt/jwt/v5 v5.3.1
	github.com/gorilla/mux v1.8.1
	github.com/oklog/ulid/v2 v2.1.1
	github.com/tmaxmax/go-sse v0.11.0
	go.etcd.io/bbolt v1.4.3
)

require golang.org/x/sys v0.29.0 // indirect
