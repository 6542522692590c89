package kafkaclient

import (
	"github.com/cockroachdb/errors"
)

// LibrdkafkaProperties returns the configuration a librdkafka-based client
// (kcat, confluent-kafka) needs to reach the same brokers: the security
// protocol, the TLS files and the SASL settings, as "key=value" property
// pairs for kcat's -X. The password is read from SASLPasswordFile when set.
// OAUTHBEARER has no librdkafka equivalent of a token file and is refused.
func (c Config) LibrdkafkaProperties() (map[string]string, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	properties := map[string]string{}
	mechanism := c.mechanism()
	switch {
	case c.tlsOn() && mechanism != "":
		properties["security.protocol"] = "SASL_SSL"
	case c.tlsOn():
		properties["security.protocol"] = "SSL"
	case mechanism != "":
		properties["security.protocol"] = "SASL_PLAINTEXT"
	default:
		return properties, nil
	}
	if c.TLSCAFile != "" {
		properties["ssl.ca.location"] = c.TLSCAFile
	}
	if c.TLSCertFile != "" {
		properties["ssl.certificate.location"] = c.TLSCertFile
		properties["ssl.key.location"] = c.TLSKeyFile
	}
	if c.TLSServerName != "" {
		// librdkafka checks the certificate against the broker's host
		// name; it cannot be told another one.
		return nil, errors.Newf("a librdkafka client cannot check the brokers' certificates against %q (TLSServerName)", c.TLSServerName)
	}
	switch mechanism {
	case "":
	case OAuthBearer:
		return nil, errors.New("a librdkafka client (kcat) cannot read an OAUTHBEARER token file")
	default:
		password, err := c.password()
		if err != nil {
			return nil, err
		}
		properties["sasl.mechanisms"] = mechanism
		properties["sasl.username"] = c.SASLUsername
		properties["sasl.password"] = password
	}
	return properties, nil
}
