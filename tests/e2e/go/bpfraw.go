// A static Go program issuing raw bpf(2) syscalls (no cgo, no libraries), for the runner e2e test.
package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"
)

const (
	sysBPF        = 321
	bpfMapCreate  = 0
	bpfMapLookup  = 1
	bpfMapUpdate  = 2
	bpfMapGetNext = 4
	mapTypeHash   = 1
)

type mapCreateAttr struct {
	mapType, keySize, valueSize, maxEntries, mapFlags uint32
}

type elemAttr struct {
	mapFd uint32
	_     uint32
	key   uint64
	value uint64
	flags uint64
}

func bpf(cmd int, attr unsafe.Pointer, size uintptr) (uintptr, syscall.Errno) {
	r, _, e := syscall.Syscall(sysBPF, uintptr(cmd), uintptr(attr), size)
	return r, e
}

func result(r uintptr, e syscall.Errno) string {
	if e != 0 {
		return fmt.Sprintf("-1 %s", e.Error())
	}
	return fmt.Sprint(r)
}

func main() {
	create := mapCreateAttr{mapType: mapTypeHash, keySize: 4, valueSize: 8, maxEntries: 64}
	fd, e := bpf(bpfMapCreate, unsafe.Pointer(&create), unsafe.Sizeof(create))
	if e != 0 {
		fmt.Println("map_create:", result(fd, e))
		os.Exit(1)
	}
	fmt.Println("map_create: ok")
	// many goroutines on many OS threads update concurrently
	runtime.GOMAXPROCS(4)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 4; i++ {
				k, v := uint32(g*4+i), uint64(g*1000+i)
				a := elemAttr{mapFd: uint32(fd), key: uint64(uintptr(unsafe.Pointer(&k))),
					value: uint64(uintptr(unsafe.Pointer(&v)))}
				if r, e := bpf(bpfMapUpdate, unsafe.Pointer(&a), unsafe.Sizeof(a)); e != 0 {
					fmt.Println("update:", result(r, e))
				}
				runtime.KeepAlive(&k)
				runtime.KeepAlive(&v)
			}
		}(g)
	}
	wg.Wait()
	sum, n := uint64(0), 0
	for k := uint32(0); k < 40; k++ {
		var v uint64
		a := elemAttr{mapFd: uint32(fd), key: uint64(uintptr(unsafe.Pointer(&k))),
			value: uint64(uintptr(unsafe.Pointer(&v)))}
		if _, e := bpf(bpfMapLookup, unsafe.Pointer(&a), unsafe.Sizeof(a)); e == 0 {
			sum += v
			n++
		} else if k == 39 {
			fmt.Println("lookup 39:", e.Error())
		}
	}
	fmt.Println("entries:", n, "sum:", sum)
	var next uint32
	a := elemAttr{mapFd: 999, value: uint64(uintptr(unsafe.Pointer(&next)))}
	fmt.Println("get_next_key bad fd:", result(bpf(bpfMapGetNext, unsafe.Pointer(&a), unsafe.Sizeof(a))))
	fmt.Println("unknown command:", result(bpf(9999, unsafe.Pointer(&a), unsafe.Sizeof(a))))
}
