package configs

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestDefaultsLoad(t *testing.T) {
	c, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.Addr != "127.0.0.1:8080" || c.Kafka.WriteTimeout != 3*time.Second || c.PayTimeout != 5*time.Minute {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

// The operator's interface: these exact env names must keep working.
func TestOperatorEnv(t *testing.T) {
	env := map[string]string{
		"FLASHSALE_HTTP_ADDR":     "127.0.0.1:9999",
		"FLASHSALE_NODE_ID":       "n7",
		"FLASHSALE_REDIS_ADDRS":   "10.0.0.1:6379, 10.0.0.2:6379",
		"FLASHSALE_KAFKA_BROKERS": "k1:9092,k2:9092",
		"FLASHSALE_KAFKA_TOPIC":   "t1",
		"FLASHSALE_ADMIN_TOKEN":   "secret",
		"FLASHSALE_STATLOG_PATH":  "/tmp/x.log",
		"FLASHSALE_PAY_TIMEOUT":   "90s",
		"FLASHSALE_STOCK_LINGER":  "200us",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	c, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.Addr != "127.0.0.1:9999" || c.Node.ID != "n7" || c.Kafka.Topic != "t1" || c.Admin.Token != "secret" ||
		c.StatLog.Path != "/tmp/x.log" || c.PayTimeout != 90*time.Second || c.Stock.Linger != 200*time.Microsecond {
		t.Fatalf("env not applied: %+v", c)
	}
	if len(c.Redis.Addrs) != 2 || c.Redis.Addrs[1] != "10.0.0.2:6379" || len(c.Kafka.Brokers) != 2 {
		t.Fatalf("comma lists not split: %q %q", c.Redis.Addrs, c.Kafka.Brokers)
	}
}

func TestFlagsBeatEnv(t *testing.T) {
	t.Setenv("FLASHSALE_NODE_ID", "from-env")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	RegisterFlags(fs)
	if err := fs.Parse([]string{"--node-id=from-flag", "--stock-batch-max=7"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(fs)
	if err != nil {
		t.Fatal(err)
	}
	if c.Node.ID != "from-flag" || c.Stock.BatchMax != 7 {
		t.Fatalf("flags not applied: id=%q batch=%d", c.Node.ID, c.Stock.BatchMax)
	}
	if _, err := c.YAML(); err != nil {
		t.Fatal(err)
	}
}

func TestInvalidRejected(t *testing.T) {
	t.Setenv("FLASHSALE_PAY_TIMEOUT", "10ms")
	if _, err := Load(nil); err == nil {
		t.Fatal("pay_timeout of 10ms accepted")
	}
}

// `flashsale config` never prints a secret: it says whether one is set and
// where it comes from.
func TestYAMLRedactsSecrets(t *testing.T) {
	for k, v := range map[string]string{"FLASHSALE_AUTH_SECRET": "auth-secret-value-0123456789abcdef",
		"FLASHSALE_PAYMENT_SECRET": "payment-secret-value", "FLASHSALE_ADMIN_TOKEN": "admin-token-value",
		"FLASHSALE_REDIS_PASSWORD":      "redis-password-value",
		"FLASHSALE_WAITING_ROOM_SECRET": "room-secret-value", "FLASHSALE_RATE_PER_USER": "0", "FLASHSALE_RATE_PER_IP": "7"} {
		t.Setenv(k, v)
	}
	c, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.WaitingRoom.Secret != "room-secret-value" {
		t.Fatalf("FLASHSALE_WAITING_ROOM_SECRET not applied: %q", c.WaitingRoom.Secret)
	}
	if c.Auth.Secret != "auth-secret-value-0123456789abcdef" || c.Rate.PerUser != 0 || c.Rate.PerIP != 7 {
		t.Fatalf("env not applied: %+v %+v", c.Auth, c.Rate)
	}
	y, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"auth-secret-value", "payment-secret-value", "admin-token-value", "redis-password-value", "room-secret-value"} {
		if strings.Contains(string(y), secret) {
			t.Errorf("config output shows %q:\n%s", secret, y)
		}
	}
	if !strings.Contains(string(y), "FLASHSALE_AUTH_SECRET") {
		t.Errorf("config output does not say where the auth secret comes from:\n%s", y)
	}
}
