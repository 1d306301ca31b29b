// Command dexrevoke revokes the refresh token a Dex server holds for one user and one client,
// through Dex's gRPC API (RevokeRefresh). Test helper: it speaks plaintext gRPC, so point it only
// at a Dex listening on loopback.
//
//	dexrevoke -addr 127.0.0.1:5557 -sub <ID token "sub" claim> -client <client id>
//
// Exit status: 0 revoked, 3 Dex had no refresh token for that pair, 1 any other failure.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	api "github.com/dexidp/dex/api/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	addr := flag.String("addr", "", "host:port of Dex's gRPC API")
	sub := flag.String("sub", "", `the user's "sub" claim as Dex issues it`)
	client := flag.String("client", "", "OAuth client id")
	timeout := flag.Duration("timeout", 10*time.Second, "deadline for the call")
	flag.Parse()
	if *addr == "" || *sub == "" || *client == "" {
		fmt.Fprintln(os.Stderr, "dexrevoke: -addr, -sub and -client are required")
		os.Exit(2)
	}

	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintf(os.Stderr, "dexrevoke: connect %s: %v\n", *addr, err)
		os.Exit(1)
	}
	defer conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	resp, err := api.NewDexClient(conn).RevokeRefresh(ctx, &api.RevokeRefreshReq{UserId: *sub, ClientId: *client})
	if err != nil {
		fmt.Fprintf(os.Stderr, "dexrevoke: RevokeRefresh: %v\n", err)
		os.Exit(1)
	}
	if resp.GetNotFound() {
		fmt.Fprintf(os.Stderr, "dexrevoke: no refresh token for client %q and that user\n", *client)
		os.Exit(3)
	}
	fmt.Println("revoked")
}
