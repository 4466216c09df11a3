//! TLS to Postgres as `sslmode` asks, for snap's own connections and for
//! the pg_dump children, against a cluster that refuses unencrypted TCP.

mod common;

use common::pg::Cluster;
use common::{Env, Run};
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

fn cert(cn: &str, san: Option<&str>, issuer: Option<(&X509, &PKey<Private>)>) -> (X509, PKey<Private>) {
    let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let serial = openssl::bn::BigNum::from_u32(rand::random::<u32>() >> 1).unwrap().to_asn1_integer().unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
    match issuer {
        None => {
            b.set_issuer_name(&name).unwrap();
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
            b.sign(&key, MessageDigest::sha256()).unwrap();
        }
        Some((ca, ca_key)) => {
            b.set_issuer_name(ca.subject_name()).unwrap();
            if let Some(dns) = san {
                let ext = SubjectAlternativeName::new().dns(dns).build(&b.x509v3_context(Some(ca), None)).unwrap();
                b.append_extension(ext).unwrap();
            }
            b.sign(ca_key, MessageDigest::sha256()).unwrap();
        }
    }
    (b.build(), key)
}

fn create(env: &Env, url: &str) -> Run {
    let mut c = env.command(&["create", "--only", "db", "--json"]);
    c.env("SUPABASE_DB_URL", url).env("PGPASSWORD", "postgres");
    common::finish(c.output().unwrap())
}

#[test]
fn sslmodes_are_honoured_by_snap_and_pg_dump() {
    let (ca, ca_key) = cert("snap test CA", None, None);
    let (server, server_key) = cert("localhost", Some("localhost"), Some((&ca, &ca_key)));
    let (other_ca, _) = cert("another CA", None, None);
    let cluster =
        Cluster::start_tls(&server.to_pem().unwrap(), &server_key.private_key_to_pem_pkcs8().unwrap()).with_fixture();
    let env = Env::new();
    let ca_file = env.path("ca.pem");
    std::fs::write(&ca_file, ca.to_pem().unwrap()).unwrap();
    let other_file = env.path("other.pem");
    std::fs::write(&other_file, other_ca.to_pem().unwrap()).unwrap();
    let port = cluster.port;

    // Encrypted without verification: works (the server refuses plain TCP,
    // so snap and its pg_dump children both spoke TLS).
    create(&env, &format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require")).ok();
    // Verified chain and host name.
    let url =
        format!("postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}", ca_file.display());
    create(&env, &url).ok();
    // The certificate names localhost, not 127.0.0.1: verify-full refuses, verify-ca accepts.
    let url =
        format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={}", ca_file.display());
    let r = create(&env, &url);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("cannot connect"), "{}", r.stderr);
    let url =
        format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-ca&sslrootcert={}", ca_file.display());
    create(&env, &url).ok();
    // A CA that did not sign the server's certificate is refused.
    let url =
        format!("postgres://postgres@localhost:{port}/postgres?sslmode=verify-ca&sslrootcert={}", other_file.display());
    let r = create(&env, &url);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.to_lowercase().contains("certificate"), "{}", r.stderr);
    // sslmode=disable is honoured, and this server refuses it.
    let r = create(&env, &format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("no encryption") || r.stderr.contains("pg_hba"), "{}", r.stderr);
    assert_eq!(env.snap(&["snapshots", "--json"]).ok().json().as_array().unwrap().len(), 3);
}
