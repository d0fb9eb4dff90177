package lua

// Redis Cluster puts a key in slot CRC16(hash tag) mod 16384, and a script
// may only touch keys of one slot. Sending an envelope debits the sender's
// wallet in the same script that records the envelope (so a balance never
// goes below zero and a refused send leaves nothing behind), which needs
// the envelope's tag {env:ID} and the wallet's tag {wallet:USER} in one
// slot. Envelope ids are random anyway, so EnvelopeIDForSender picks one
// whose slot is the sender's: the key layout stays as it is.

const slots = 16384

// crc16 is CRC-16/XMODEM, Redis Cluster's key hash.
func crc16(crc uint16, s string) uint16 {
	for i := 0; i < len(s); i++ {
		crc = crc16step(crc, s[i])
	}
	return crc
}

func crc16step(crc uint16, c byte) uint16 {
	crc ^= uint16(c) << 8
	for range 8 {
		if crc&0x8000 != 0 {
			crc = crc<<1 ^ 0x1021
		} else {
			crc <<= 1
		}
	}
	return crc
}

// Slot returns the Redis Cluster slot of a hash tag's content.
func Slot(tag string) uint16 { return crc16(0, tag) % slots }

const idDigits = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// EnvelopeIDForSender extends prefix (random, from the id alphabet) with
// four letters or digits so that envelope id's keys share sender's wallet slot. About
// 16,384 of the 14.8 million suffixes are tried on average (tens of
// microseconds). It reports false in the rare case none fits; the caller then tries
// another prefix.
func EnvelopeIDForSender(prefix, sender string) (string, bool) {
	want := Slot("wallet:" + sender)
	base := crc16(0, "env:"+prefix)
	for a := 0; a < len(idDigits); a++ {
		ca := crc16step(base, idDigits[a])
		for b := 0; b < len(idDigits); b++ {
			cb := crc16step(ca, idDigits[b])
			for c := 0; c < len(idDigits); c++ {
				cc := crc16step(cb, idDigits[c])
				for d := 0; d < len(idDigits); d++ {
					if crc16step(cc, idDigits[d])%slots == want {
						return prefix + string([]byte{idDigits[a], idDigits[b], idDigits[c], idDigits[d]}), true
					}
				}
			}
		}
	}
	return "", false
}
