module c19.dev/example-app

go 1.22
