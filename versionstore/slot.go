package versionstore

import (
	"strconv"
	"strings"
)

// clusterSlots is the number of Redis Cluster hash slots.
const clusterSlots = 16384

// crc16Table is CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys
// with.
var crc16Table = func() [256]uint16 {
	var table [256]uint16
	for i := range table {
		crc := uint16(i) << 8
		for bit := 0; bit < 8; bit++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		table[i] = crc
	}
	return table
}()

func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc = crc<<8 ^ crc16Table[byte(crc>>8)^s[i]]
	}
	return crc
}

// clusterSlot returns the slot of a hash tag's content (or of a key without
// a tag).
func clusterSlot(tag string) int {
	return int(crc16(tag)) % clusterSlots
}

// slotOfKey returns the slot of a key by Redis Cluster's rule: the content of
// the first {…} when it is not empty, else the whole key.
func slotOfKey(key string) int {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if end := strings.IndexByte(key[open+1:], '}'); end > 0 {
			return clusterSlot(key[open+1 : open+1+end])
		}
	}
	return clusterSlot(key)
}

// slotTags returns one short hash tag per slot, the first of "0", "1", …
// that hashes to it: the tags of the per-slot amnesia markers.
func slotTags() []string {
	tags := make([]string, clusterSlots)
	found := 0
	for n := 0; found < clusterSlots; n++ {
		tag := strconv.Itoa(n)
		if slot := clusterSlot(tag); tags[slot] == "" && !strings.ContainsAny(tag, "{}") {
			tags[slot] = tag
			found++
		}
	}
	return tags
}
